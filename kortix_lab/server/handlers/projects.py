"""Projects and the files of their sandboxes."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...agentpress.store import Project
from ...sandbox.base import WORKSPACE
from .. import models as m
from ..errors import ApiError
from ..openapi import Op, Param
from .base import KortixHandler, checked_id

FILE_PATH = Param("path", description=f"A sandbox path: absolute under {WORKSPACE} or "
                                      "relative to it. Paths outside it are refused (400).")
ERRORS = (400, 404, 503)


class ProjectsHandler(KortixHandler):
    ops: ClassVar[dict[str, Op]] = {
        "get": Op("List projects", m.ProjectList),
        "post": Op("Create a project", m.ProjectOut, status=201, body=m.ProjectCreate),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(await self.service.list_projects())

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.write_json(await self.service.create_project(self.body(m.ProjectCreate)), 201)


class ProjectHandler(KortixHandler):
    ops: ClassVar[dict[str, Op]] = {
        "get": Op("Get a project", m.ProjectOut, errors=(404,)),
    }

    @web.authenticated
    @authorized
    async def get(self, project_id: str) -> None:
        from ..serialize import project_json

        project = await self.service.get_project(checked_id(project_id, "project"))
        self.write_json(project_json(project))


class FilesHandler(KortixHandler):
    ops: ClassVar[dict[str, Op]] = {
        "get": Op("List a directory of the project's sandbox", m.FileList, errors=ERRORS,
                  params=(FILE_PATH,)),
    }

    @web.authenticated
    @authorized
    async def get(self, project_id: str) -> None:
        project = await self.service.get_project(checked_id(project_id, "project"))
        self.write_json(await self.files.list(project, self.str_arg("path") or WORKSPACE))


class FileUploadHandler(KortixHandler):
    ops: ClassVar[dict[str, Op]] = {
        "post": Op("Upload a file into the project's sandbox (made if it has none yet)",
                   m.FileEntry, status=201, body=m.FileUpload, errors=ERRORS),
    }

    @web.authenticated
    @authorized
    async def post(self, project_id: str) -> None:
        import base64
        import binascii

        body = self.body(m.FileUpload)
        try:
            data = base64.b64decode(body.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "data_base64 is not valid base64") from None
        project = await self.service.get_project(checked_id(project_id, "project"))
        self.write_json(await self.files.upload(project, body.path, data), 201)


class _FileHandler(KortixHandler):
    async def _file_of(self, project_id: str) -> tuple[Project, str]:
        """The project and the ``?path=`` of the file a request names (400 without one)."""
        path = self.str_arg("path")
        if path is None:
            raise ApiError(400, "path is required")
        return await self.service.get_project(checked_id(project_id, "project")), path


class FileDownloadHandler(_FileHandler):
    ops: ClassVar[dict[str, Op]] = {
        "get": Op("Download a file of the project's sandbox", media="application/octet-stream",
                  errors=(*ERRORS, 413), params=(Param("path", required=True,
                                                       description=FILE_PATH.description),)),
    }

    @web.authenticated
    @authorized
    async def get(self, project_id: str) -> None:
        project, path = await self._file_of(project_id)
        name, mime, data = await self.files.download(project, path)
        # Always an attachment: a file the agent wrote must never run as a page here.
        self.set_header("Content-Type", mime)
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}")
        self.finish(data)


class FilePreviewHandler(_FileHandler):
    ops: ClassVar[dict[str, Op]] = {
        "get": Op("Preview a file: text, a table, an image, or its size", m.FilePreview,
                  errors=ERRORS, params=(Param("path", required=True,
                                               description=FILE_PATH.description),)),
    }

    @web.authenticated
    @authorized
    async def get(self, project_id: str) -> None:
        project, path = await self._file_of(project_id)
        self.write_json(await self.files.preview(project, path))
