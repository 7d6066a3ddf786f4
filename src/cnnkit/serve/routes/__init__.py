"""The server's routes, by what they answer; each reads the app's
:class:`~cnnkit.serve.state.ServerState`."""

from cnnkit.serve.routes.models import router as models_router
from cnnkit.serve.routes.predict import router as predict_router
from cnnkit.serve.routes.status import router as status_router

ROUTERS = (status_router, models_router, predict_router)
