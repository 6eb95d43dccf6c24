"""The tournament domain.

``models`` holds the tables (users, tournaments, participants, rounds, matches,
match reports and events, the email outbox) and their state enums; ``formats``
the pure bracket algorithms; ``services`` every state change, each in one
transaction, so the API and the jobs share exactly the same rules; ``errors``
the one exception hierarchy those services raise.
"""
