"""The ASGI application: HTTP to Django, WebSocket through the session and the exact origin
check (or a Bearer token) to the room router. uvicorn serves it
(`uvicorn project.asgi:application`)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: these pull in models.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from accounts.sockets import SessionSocketMiddleware  # noqa: E402
from accounts.tokens import BearerTokenSocketMiddleware  # noqa: E402
from project import collector  # noqa: E402
from project.hygiene import RefuseUnrouted, StaticFiles  # noqa: E402
from project.origins import OriginCheck  # noqa: E402
from project.outage import SocketOutage  # noqa: E402
from realtime.connection import DirectSend  # noqa: E402
from rooms.routing import websocket_urlpatterns  # noqa: E402

http_app = StaticFiles(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

socket_router = RefuseUnrouted(URLRouter(websocket_urlpatterns))

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # A handshake with `Authorization: Bearer <token>` is that token's owner and needs no
        # Origin (a browser cannot set the header); every other one goes through the Origin
        # check and the session cookie.
        # A handshake the database being down breaks (the session, the token, the room) is
        # answered 503, not a 500 with a traceback.
        "websocket": DirectSend(
            SocketOutage(
                BearerTokenSocketMiddleware(
                    SessionSocketMiddleware(OriginCheck(socket_router)),
                    token_app=socket_router,
                )
            )
        ),
    }
)

# Last: what is loaded by now lives as long as the process (project/collector.py).
collector.tune(settings.GC_THRESHOLDS, freeze=settings.GC_FREEZE)
