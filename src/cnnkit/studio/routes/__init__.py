"""The studio's routes, by what they answer; each reads the app's
:class:`~cnnkit.studio.state.StudioState` (``app.state.studio``)."""

from cnnkit.studio.routes.classes import router as classes_router
from cnnkit.studio.routes.jobs import router as jobs_router
from cnnkit.studio.routes.page import router as page_router
from cnnkit.studio.routes.runs import router as runs_router

# In the order they were declared in (the first route that matches a path answers).
ROUTERS = (page_router, classes_router, jobs_router, runs_router)
