"""The web door: the only package that imports FastAPI and Starlette. Routes translate
HTTP to service calls and back, and nothing more."""
