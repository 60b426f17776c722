"""ShikshaSetu API: the Custom GPT adapter, OAuth 2.0 authorization server and school-education domains."""
