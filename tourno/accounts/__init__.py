"""Users: the people who play, organize and administer. Every other package may
import this one; it imports only :mod:`tourno.db`."""
