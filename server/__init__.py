"""C2Seg scoring server (installed as c2seg_server): FastAPI + SQLAlchemy, run by `c2seg serve`.

Modules, by layer: a request goes down (routes -> services -> scoring and the database), never up.

The HTTP side (what a request brings and the answer):
  main          create_app(settings) factory, the scoring pool, security headers, error handlers
  routes_*      routers, thin: dependencies -> a service -> the answer. submissions (+ final picks),
                leaderboard, teams/health; pages: the HTML board; site: the participants' pages
                under /team (sign-in, upload, their submissions, picks), answering as the API does
  site_sessions the site's sign-in: sessions behind an HttpOnly cookie (only hashes stored,
                ended by a rotated or revoked token), CSRF tokens, same-origin checks
  deps          typed dependencies (SessionDep, TeamDep, ...) and the Services bundle they come from
  schemas       the API's bodies (also the shapes the board's rules fill in)
  bodies        small request bodies: the token first, then a capped body
  uploads       streamed multipart upload under a size cap and a time limit
  edge          uvicorn's h11 protocol with head timeouts, per-client and waiting-head bounds
  logs          the access log without query strings

The services (what the server does, free of HTTP):
  submit_service  an upload's steps: caps before the body, the phase at its last byte, the file's
                admission (the track decided once, the header read in the one open that the
                scores reuse), the scoring basis, the commit; refusals as Refusal(status, detail)
  admission     what an upload holds before its body is read (per-team, refused-upload, spool caps)
  board         which submission shows and how the board ranks; its single-flight cache
  ranking       sorting by any column, and the combined view over tracks
  rescoring     every stored submission scored again (a label fix, a new split)
  organizer     what `c2seg admin` does: hide, disqualify, tokens, members, duplicates
  folders       the data folder's writability (serve's start, /healthz)

Scoring (in child processes; imports nothing of the server above it):
  scoring       the Scorer: the file's admission (peek -> Header) and its scores on the
                public/private split, with the kit's reader and metrics
  workers       scoring child processes (memory limit, timeout, replaced when they die); a score
                goes to the child that keeps its admitted file open

The database (the records and the rules they are read by; imports nothing above it):
  models, db    SQLAlchemy tables; SQLite (WAL) or PostgreSQL engines; upgrade on open
  migrations/   Alembic revisions 0001 (the 0.1 schema), 0002, ... (see migrations/README.md)
  crud          short transactions: teams, atomic quota reservations, submissions, final picks
  stored        settings the server records in its database: the secret split, the data folder
  phases        a track's phases as dated changes, read at request time (schedule, caps, ends)
  ladder        exact or Ladder answers on the public part, and each team's leak budget in bits
  security      token generation and hashing (only SHA-256 hashes are stored)

The organizer's command line, and what every layer reads:
  cli, admin_*  `c2seg serve` and `c2seg admin ...`, the admin verbs by topic (admin_teams, admin_board,
                admin_evidence); admin_db: which database and data folder; outfiles: their output files
  config        Settings (pydantic-settings, C2SEG_* variables)
"""
