"""``proctor demo``: the finance-agent story played end to end on a fresh home, with
the finance API and Proctor served on loopback; every step checks its own outcome."""
