"""Privacy audit of hash codes: attacks behind one interface (:mod:`privacy.base`) and a registry
(:mod:`privacy.registry`); threat model in ``privacy/THREAT_MODEL.md``, module map in
``privacy/README.md``. Defences (DP-SGD, randomised response) live beside them."""
