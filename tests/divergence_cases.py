"""The (divergence, sigma) cases the f-distill and Uni-Instruct gradient tests share.

Sigmas 1.5 and 3 (Neyman 2 and 3): the reweighted estimators average ``h(p/q)`` under q, whose variance
grows without bound as sigma falls and q_sigma gets narrower than p_sigma in some direction (``r``
for forward KL and Jeffreys, ``1/r`` for Neyman); at these sigmas 200k samples pin the direction.
"""
from methods import divergences

SIGMAS = {name: (1.5, 3.0) for name in divergences.DIVERGENCES} | {"neyman": (2.0, 3.0)}
CASES = [(name, sigma) for name, sigmas in SIGMAS.items() for sigma in sigmas]
