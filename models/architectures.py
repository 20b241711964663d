"""Keras builders for the reference zoo: one function per architecture family.

Each builder is small enough to train on 2 CPU cores in about two minutes and still shows the
structure that matters for INT8: BN folding, residual adds, depthwise convs with ReLU6, and
attention with LayerNorm, GELU and softmax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keras is imported lazily so that `edgeq zoo list` stays fast
    import keras


def _conv_bn_relu(x: "keras.KerasTensor", filters: int, stride: int = 1, name: str = "") -> "keras.KerasTensor":
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def plain_cnn(input_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> "keras.Model":
    """conv-BN-ReLU blocks, max pooling, global pooling and a dense classifier."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, width, name="b1")
    x = layers.MaxPooling2D(name="pool1")(x)
    x = _conv_bn_relu(x, width * 2, name="b2")
    x = layers.MaxPooling2D(name="pool2")(x)
    x = _conv_bn_relu(x, width * 4, name="b3")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="plain_cnn")


def _residual_block(x: "keras.KerasTensor", filters: int, stride: int, name: str) -> "keras.KerasTensor":
    from keras import layers

    shortcut = x
    y = _conv_bn_relu(x, filters, stride, name=f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_b_bn")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet(input_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> "keras.Model":
    """A ResNet-style net: three stages of basic residual blocks with identity and projection adds."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, width, name="stem")
    x = _residual_block(x, width, 1, name="s1")
    x = _residual_block(x, width * 2, 2, name="s2")
    x = _residual_block(x, width * 4, 2, name="s3")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="resnet")


def _inverted_residual(x: "keras.KerasTensor", filters: int, stride: int, expansion: int,
                       name: str) -> "keras.KerasTensor":
    from keras import layers

    channels = x.shape[-1]
    y = layers.Conv2D(channels * expansion, 1, use_bias=False, name=f"{name}_expand")(x)
    y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_expand_relu6")(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2(input_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> "keras.Model":
    """A MobileNetV2-style net: depthwise separable convs, ReLU6 and linear-bottleneck residuals."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    plan = [(width, 1), (width * 2, 2), (width * 2, 1), (width * 4, 2), (width * 4, 1)]
    for i, (filters, stride) in enumerate(plan):
        x = _inverted_residual(x, filters, stride, expansion=4, name=f"ir{i}")
    x = layers.Conv2D(width * 8, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def vit(input_shape: tuple[int, int, int], num_classes: int, patch: int = 4, dim: int = 64,
        depth: int = 2, heads: int = 4) -> "keras.Model":
    """A small vision transformer: patch embedding, learned positions, pre-norm MHSA blocks, GELU MLP."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(inputs)
    tokens = (input_shape[0] // patch) * (input_shape[1] // patch)
    x = layers.Reshape((tokens, dim), name="tokens")(x)
    x = _PositionEmbedding(tokens, dim, name="pos_embed")(x)
    for i in range(depth):
        y = layers.LayerNormalization(epsilon=1e-6, name=f"blk{i}_ln1")(x)
        y = layers.MultiHeadAttention(heads, dim // heads, name=f"blk{i}_mhsa")(y, y)
        x = layers.Add(name=f"blk{i}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"blk{i}_ln2")(x)
        y = layers.Dense(dim * 2, activation="gelu", name=f"blk{i}_mlp1")(y)
        y = layers.Dense(dim, name=f"blk{i}_mlp2")(y)
        x = layers.Add(name=f"blk{i}_add2")([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="vit")


def face_cnn(input_shape: tuple[int, int, int], num_classes: int, width: int = 8) -> "keras.Model":
    """A compact single-channel CNN for face / non-face crops."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, width, name="b1")
    x = layers.MaxPooling2D(name="pool1")(x)
    x = _conv_bn_relu(x, width * 2, name="b2")
    x = layers.MaxPooling2D(name="pool2")(x)
    x = _conv_bn_relu(x, width * 4, name="b3")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="face_cnn")


def _PositionEmbedding(tokens: int, dim: int, name: str) -> "keras.layers.Layer":  # noqa: N802
    from .layers import PositionEmbedding

    return PositionEmbedding(tokens, dim, name=name)
