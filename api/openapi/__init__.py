"""Published API descriptions: the OpenAPI 3.1 spec, the GPT Actions schema, ReDoc and Postman."""
