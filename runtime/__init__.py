"""ganport runtime: use exported generators in any Python program, with or without torch.

Load a model package and generate images::

    from ganport.runtime import Generator, make_grid, save_png

    gen = Generator.load("packages/glyphs")                   # ONNX on CPU by default
    images = gen.generate(16, labels="A", seed=1)             # uint8 [16, H, W, C]
    save_png("grid.png", make_grid(images, nrow=4))
    save_png("word.png", gen.render_word("Hello 2026", seed=1))

Nothing in this package imports torch at module level: the ONNX backend needs only numpy,
onnxruntime and Pillow (the edge install). onnxruntime itself is imported when a model is loaded.
"""

from ganport.runtime.generator import Generator, interpolate_latents
from ganport.runtime.images import decode_png, encode_png, from_uint8, make_grid, save_png, to_uint8
from ganport.runtime.manifest import ModelInfo, read_manifest
from ganport.runtime.words import WordPlan

__all__ = [
    "Generator",
    "ModelInfo",
    "WordPlan",
    "decode_png",
    "encode_png",
    "from_uint8",
    "interpolate_latents",
    "make_grid",
    "read_manifest",
    "save_png",
    "to_uint8",
]
