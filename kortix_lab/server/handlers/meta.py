"""The API describing itself: status and the OpenAPI document."""

from __future__ import annotations

from typing import ClassVar

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import models as m
from ..errors import ApiError
from ..openapi import Op
from .base import KortixHandler


class StatusHandler(KortixHandler):
    ops: ClassVar[dict[str, Op]] = {
        "get": Op("Server status: API version, limits, active runs", m.StatusOut),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(await self.service.status())


class OpenAPIHandler(KortixHandler):
    ops: ClassVar[dict[str, Op]] = {
        "get": Op("This API's OpenAPI document"),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from ..routes import openapi_document

        self.write_json(openapi_document(self.base_url))


class FallbackHandler(KortixHandler):
    """Anything else under the API prefix: a JSON 404 naming the document to read, instead
    of Jupyter's HTML page. Not an operation, so not in the OpenAPI document."""

    async def _missing(self, path: str) -> None:
        raise ApiError(404, f"no route {self.request.method} /kortix-lab/api/{path[:200]}; "
                            "the routes are listed in /kortix-lab/api/openapi.json")

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self._missing(path)

    @web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self._missing(path)

    @web.authenticated
    @authorized
    async def put(self, path: str) -> None:
        await self._missing(path)

    @web.authenticated
    @authorized
    async def patch(self, path: str) -> None:
        await self._missing(path)

    @web.authenticated
    @authorized
    async def delete(self, path: str) -> None:
        await self._missing(path)
