"""The Firmware page's routes (the model: web/firmware_view.py), added to
the app by app.build_app through its guarded() decorator (login, role;
on a POST the CSRF token and Origin):

    GET  /firmware            each gate's version, progress, plan and
                              rollbacks; the image store; the forms  attendant
    GET  /api/firmware        the same as JSON                       attendant
    POST /firmware/offer      form: version, target (gate|all), gate,
                              reboot (now|at|manual), at (HH:MM), force
    POST /firmware/reboot     form: target, gate, when (now|at), at
    POST /firmware/cancel     form: target, gate

The POSTs need the role that may push tariffs (manager); each answers 303
to /firmware, or the error page (400) saying what is wrong, nothing done."""
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from parkgate_tools.lot.web import firmware_view


def routes(page, guarded, render, common, pusher_role):
    """The Starlette routes of the Firmware page of an OperatorPage;
    guarded, render and common: build_app's; pusher_role: the role the
    forms need."""

    @guarded()
    def firmware(request, user, data):
        return render(request, "firmware.html", fw=firmware_view.view(page),
                      **common(request, user))

    @guarded(api=True)
    def firmware_api(request, user, data):
        return JSONResponse(firmware_view.view(page))

    def action(model):
        @guarded(need=pusher_role, body="form")
        def endpoint(request, user, data):
            model(page, data, user["name"])
            return RedirectResponse("/firmware", 303)
        endpoint.__name__ = "firmware_" + model.__name__
        return endpoint

    return [Route("/firmware", firmware),
            Route("/api/firmware", firmware_api),
            Route("/firmware/offer", action(firmware_view.offer), methods=["POST"]),
            Route("/firmware/reboot", action(firmware_view.reboot), methods=["POST"]),
            Route("/firmware/cancel", action(firmware_view.cancel), methods=["POST"])]
