"""One reconcile pass over one Consortium, one step per module, in the order ``reconcile``
runs them: ``secrets`` → ``observe`` → ``governing`` → ``acks`` → ``apply`` → ``lifecycle``
→ ``report``. ``context`` holds what the steps share (the pass, the memory kept between
passes); ``observation`` the facts they produce; ``status`` and ``upgrade`` the pure decisions.
"""
