"""The JSON API, one ``APIRouter`` per OpenAPI tag (``routes/<tag>.py``); ``web/api.py``
assembles them. Each route turns HTTP into one service call with the caller's ``Actor``; the
services decide what the actor may do, log it and enforce the rules. Nothing here checks a
role itself."""
