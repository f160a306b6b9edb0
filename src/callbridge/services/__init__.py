"""Services: the use cases (admission, placing, the call's lifecycle, the bridge, the
operator's doors, background jobs). They reach the outside world only through
:mod:`callbridge.ports`, and are wired by :mod:`callbridge.bootstrap`."""
