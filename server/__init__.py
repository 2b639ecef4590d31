"""C2Seg scoring server (installed as c2seg_server): FastAPI + SQLAlchemy, run by `c2seg serve`.

Modules (flat, FastAPI-template style):
  config        Settings (pydantic-settings, C2SEG_* variables)
  models, db    SQLAlchemy tables; SQLite (WAL) or PostgreSQL engines; upgrade on open
  migrations/   Alembic revisions 0001 (the 0.1 schema), 0002, ... (see migrations/README.md)
  crud          short transactions: teams, atomic quota reservations, submissions, final picks
  admission     what an upload holds before its body is read (per-team, refused-upload, spool caps)
  stored        settings the server records in its database: the secret split, the data folder
  phases        a track's phases as dated changes, read at request time (schedule, caps, ends)
  organizer     what `c2seg admin` does: hide, disqualify, tokens, members, duplicates
  security      token generation and hashing (only SHA-256 hashes are stored)
  scoring       public/private block split and scoring with the kit's reader and metrics
  workers       scoring child processes (memory limit, timeout, replaced when they die)
  uploads       streamed multipart upload under a size cap and a time limit
  folders       the data folder's writability (serve's start, /healthz)
  edge          uvicorn's h11 protocol with head timeouts, per-client and waiting-head bounds
  logs          the access log without query strings
  ladder        exact or Ladder answers on the public part, and each team's leak budget in bits
  board         which submission shows and how the board ranks; its single-flight cache
  ranking       sorting by any column, and the combined view over tracks
  deps          typed dependencies (SessionDep, TeamDep, ...)
  routes_*      routers: submissions (+ final picks), leaderboard, teams/health; pages: the HTML board
  cli, admin_*  `c2seg serve` and `c2seg admin ...`, the admin verbs by topic (admin_teams, admin_board,
                admin_evidence); admin_db: which database and data folder
  main          create_app(settings) factory, security headers, error handlers
"""
