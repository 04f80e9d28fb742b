"""WSOL training methods of the evaluation standard (Choe et al., CVPR 2020) as composable pieces.

``config.method.name`` picks one: ``cam`` (plain training), ``has`` (Hide-and-Seek),
``acol`` (adversarial complementary learning), ``spg`` (self-produced guidance),
``adl`` (attention-based dropout) or ``cutmix``. Input-side methods (HaS, CutMix)
act on the batch inside the train step; architecture-side methods (ACoL, SPG, ADL)
are layers and heads the WSOL backbones build when asked for them.
"""
