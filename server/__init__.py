"""C2Seg scoring server (installed as c2seg_server)."""
