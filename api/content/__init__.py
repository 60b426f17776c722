"""Content tools: simplify to a class level, translate, generate questions, align to learning outcomes."""
