"""Archive captioning, resumable: find and plan the videos (inputs), caption them in chunks on
worker processes or Ray (worker, engines), write each one's outputs as a set (outputs)."""
