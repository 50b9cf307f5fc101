"""The central (head-office) server: takes events and corrections forwarded by lots,
exactly once, and serves tariffs and member lists to them; an admin page lists the lots.

    server.py   CentralServer (uvicorn in a background thread) and `parkgate central`
    app.py      the Starlette application: routes, who may do what, the admin page
    store.py    CentralStore on PostgreSQL or SQLite, the lot id in every key
    templates/  the admin page (Jinja2)"""
