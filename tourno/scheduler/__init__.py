"""``tourno schedule``: dispatch the periodic jobs on wall-clock slots.

The scheduler only dispatches; workers run the jobs. ``tasks`` is the table
of what runs how often, ``loop`` the slot maths and the dispatch loop.
"""
