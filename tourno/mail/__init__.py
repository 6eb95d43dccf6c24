"""Sending the email outbox: templates, transports and the rate-limited drain.

Domain services write emails as ``email_outbox`` rows in the transaction of the
change that causes them; :func:`tourno.mail.drain.drain` sends them.
"""
