//! PostgreSQL going away: replicas stop serving and say so, then resume by themselves.
