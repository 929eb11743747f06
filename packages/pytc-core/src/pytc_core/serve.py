"""A local HTTP file server for precomputed layers, so Neuroglancer in a browser can open them.

A browser cannot read ``file://`` layers; this serves a folder (through CloudVolume's viewer
handler, which decompresses chunks and answers range requests) with the CORS headers
Neuroglancer needs. A layer ``ROOT/seg`` is then ``precomputed://http://HOST:PORT/seg``.
"""

from __future__ import annotations

import os
from http.server import ThreadingHTTPServer

from pytc_core.errors import UserError

__all__ = ["make_server", "serve_folder"]


def make_server(root: str | os.PathLike[str], host: str = "localhost", port: int = 8080):
    """An HTTP server (not yet serving) for the files under folder ``root``."""
    from cloudvolume.server import ViewerServerHandler  # heavy: only when serving

    path = os.path.abspath(os.fspath(root))
    if not os.path.isdir(path):
        raise UserError(f"{path} is not a folder", "serve the folder that holds the layers")

    class Handler(ViewerServerHandler):
        def __init__(self, *args):
            super().__init__("file://" + path, *args)

        def end_headers(self) -> None:
            # Chrome asks before a public page reads a local server (Private Network Access)
            self.send_header("Access-Control-Allow-Private-Network", "true")
            super().end_headers()

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
            pass

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})",
                        "pick another --port (and set [eval.neuroglancer] local_server to "
                        "match)") from None


def serve_folder(root: str | os.PathLike[str], host: str = "localhost", port: int = 8080,
                 announce=print) -> None:
    """Serve ``root`` at ``http://host:port/`` until Ctrl-C."""
    server = make_server(root, host, port)
    announce(f"serving {os.path.abspath(os.fspath(root))} at "
             f"http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
