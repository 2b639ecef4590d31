"""C2Seg scoring server (installed as c2seg_server): FastAPI + SQLAlchemy, run by `c2seg serve`.

Modules (flat, FastAPI-template style):
  config        Settings (pydantic-settings, C2SEG_* variables)
  models, db    SQLAlchemy tables; SQLite (WAL) or PostgreSQL engines
  crud          short transactions: teams, phases, atomic quota reservations, submissions
  security      token generation and hashing (only SHA-256 hashes are stored)
  scoring       public/private block split and scoring with the kit's reader and metrics
  workers       scoring child processes (memory limit, timeout, replaced when they die)
  uploads       streamed multipart upload under a size cap and a time limit
  board         the leaderboard and its single-flight cache
  deps          typed dependencies (SessionDep, TeamDep, ...)
  routes_*      routers: submissions, leaderboard, teams/health; pages: the HTML board
  main          create_app(settings) factory, security headers, error handlers
"""
