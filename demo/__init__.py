"""The demo and test models, apart from the Imagic nodes: the shapes world (synthetic scenes whose true attributes
are known), the small model trained on it (Imagic Shapes Checkpoint, Imagic Shapes Scene), the tiny random models
of each family the tests build (Imagic Tiny Checkpoint), and the headless demo's helpers. Imports only public
names of ``core`` and ``nodes``. ``core`` never imports from here, and ``nodes`` only in ``nodes/extension.py``,
the one list of the pack's nodes.
"""
