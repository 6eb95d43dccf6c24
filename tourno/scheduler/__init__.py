"""``tourno schedule``: dispatch the jobs that declare a cron expression.

The scheduler only dispatches; workers run the jobs. ``tasks`` is the table
of what runs when, ``cron`` the slot maths (cronsim), ``loop`` the dispatch
loop and ``status`` what ``tourno schedule list`` shows.
"""
