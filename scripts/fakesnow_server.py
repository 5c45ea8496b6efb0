"""A local Snowflake for the tests: fakesnow's HTTP server (Snowflake's wire protocol, the SQL run in DuckDB).

Run by scripts/test with .venv-fakesnow's Python: python scripts/fakesnow_server.py --port 8765

It is `fakesnow -s`, with one addition: the login response also carries masterToken, validityInSeconds,
masterValidityInSeconds and sessionId, which snowflake-connector-python 5 (the driver the project uses: the
first snowflake-sqlalchemy that supports SQLAlchemy 2.1 needs it) requires and fakesnow 0.12.1 does not send
("250001 (08001): Failed to login: Missing response field: master token"). Every session shares one in-memory
DuckDB; the tests give each test its own database.
"""

from __future__ import annotations

import argparse
import importlib
import json

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import request_response

server = importlib.import_module("fakesnow.server")  # the module; the package's own `fakesnow.server` is a function
_fakesnow_login = server.login_request


async def login_request(request: Request) -> Response:
    response = await _fakesnow_login(request)
    body = json.loads(response.body)
    data = body.get("data") or {}
    if body.get("success") and "token" in data:
        data.setdefault("masterToken", f"master-{data['token']}")
        data.setdefault("validityInSeconds", 3600)
        data.setdefault("masterValidityInSeconds", 14400)
        data.setdefault("sessionId", int.from_bytes(data["token"].encode()[:6], "big"))
    return JSONResponse(body, status_code=response.status_code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    routes = [r for r in server.routes if getattr(r, "endpoint", None) is _fakesnow_login]
    if len(routes) != 1:
        raise SystemExit("scripts/fakesnow_server.py: fakesnow's login route moved; update this wrapper")
    routes[0].endpoint, routes[0].app = login_request, request_response(login_request)
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
