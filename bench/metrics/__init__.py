"""Evaluation: image-distribution metrics through torch-fidelity, and text-to-image scores.

``images`` holds the one quantisation (``to_uint8``) and image-set I/O; ``fidelity`` FID, IS, KID
and precision/recall; ``t2i`` aesthetic, ImageReward and PickScore (optional extra ``t2i-metrics``).
"""
