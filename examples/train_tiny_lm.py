"""A tiny transformer language model whose logits gradient comes from a CUDA kernel.

    python examples/train_tiny_lm.py                      # healthy: the loss falls
    python examples/train_tiny_lm.py --lr 1e-2 --diagnose # too high a learning rate: lr-problem
    python examples/train_tiny_lm.py --kernel sign-flipped --diagnose   # a catalogue bug: kernel-bug
    python examples/train_tiny_lm.py --misalign 2 --diagnose            # double shift: data-misalignment

The model (token and position embeddings, causal self-attention blocks, a tied-free unembedding)
runs forward and backward in JAX, except the gradient of the cross-entropy loss with respect to the
logits: that comes from a loss-ce kernel (a shipped one, a catalogue bug, or your own .cu) through a
gradcheck backend (the GPU through PyCUDA when there is one, else the cpu backend that runs the same
source). It trains with SGD and momentum on a character-level text the script generates from a small grammar.

`gradcheck.probe.watch` checks the first batches of the data loader: misaligned data stops the run
before the first step. `--diagnose` goes in the order DIAGNOSTIC_GUIDE.md#decision-tree gives (data
first, then the gradient, then the learning rate): the probe, a short training run, then
`gradcheck.diagnose_training` on fixed batches, and the last line is `verdict: <verdict>`.
`--log FILE` writes a JSON-lines training log that `gradcheck diagnose-log FILE` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import gradcheck
from gradcheck import probe
from gradcheck.ops import get_op

IGNORE = -100

# The grammar of the generated text: short sentences a tiny model can learn in a few hundred steps.
SUBJECTS = (
    "the cat",
    "a dog",
    "my aunt",
    "the old man",
    "our teacher",
    "a small bird",
    "the baker",
)
VERBS = ("sees", "likes", "finds", "follows", "paints", "calls", "feeds", "helps")
OBJECTS = ("the red ball", "a green apple", "the tall tree", "my blue hat", "the river", "a cake")
ENDINGS = (".", " today.", " again.", " at noon.", " in the rain.")


def generate_text(n_chars: int, seed: int) -> str:
    """Sentences drawn from the grammar above until the text is ``n_chars`` long."""
    rng = np.random.default_rng(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        s = " ".join(
            (
                str(rng.choice(SUBJECTS)),
                str(rng.choice(VERBS)),
                str(rng.choice(OBJECTS)),
            )
        ) + str(rng.choice(ENDINGS))
        parts.append(s[0].upper() + s[1:] + "\n")
        size += len(parts[-1])
    return "".join(parts)[:n_chars]


class Batches:
    """Random windows of the text: inputs = tokens[i : i + seq], targets = tokens[i + shift : ...].

    ``shift`` 1 is next-token prediction; 0 makes a copy task, 2 a double shift (--misalign).
    """

    def __init__(self, tokens: np.ndarray, batch: int, seq: int, shift: int, seed: int) -> None:
        self.tokens, self.batch, self.seq, self.shift = tokens, batch, seq, shift
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.draw()

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        starts = self.rng.integers(0, len(self.tokens) - self.seq - 3, size=self.batch)
        idx = starts[:, None] + np.arange(self.seq)[None, :]
        return self.tokens[idx].astype(np.int32), self.tokens[idx + self.shift].astype(np.int32)


# ---- the model (JAX) ---------------------------------------------------------------------------


def init_params(vocab: int, seq: int, width: int, layers: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    params: dict[str, Any] = {
        "tok": normal(vocab, width),
        "pos": normal(seq, width),
        "ln_f": {"g": np.ones(width, np.float32), "b": np.zeros(width, np.float32)},
        "unembed": normal(width, vocab),
        "blocks": [],
    }
    for _ in range(layers):
        params["blocks"].append(
            {
                "ln1": {"g": np.ones(width, np.float32), "b": np.zeros(width, np.float32)},
                "qkv": normal(width, 3 * width),
                "proj": normal(width, width, std=0.02 / math.sqrt(2 * layers)),
                "ln2": {"g": np.ones(width, np.float32), "b": np.zeros(width, np.float32)},
                "up": normal(width, 4 * width),
                "down": normal(4 * width, width, std=0.02 / math.sqrt(2 * layers)),
            }
        )
    return params


def forward(params: Any, inputs: Any, heads: int) -> Any:
    """Logits [batch, seq, vocab] for token ids [batch, seq]; works in float32 and float64."""
    import jax
    import jax.numpy as jnp

    def norm(p: Any, x: Any) -> Any:
        mu = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]

    b, t = inputs.shape
    x = params["tok"][inputs] + params["pos"][:t]
    width = x.shape[-1]
    hd = width // heads
    causal = jnp.tril(jnp.ones((t, t), bool))
    for blk in params["blocks"]:
        q, k, v = jnp.split(norm(blk["ln1"], x) @ blk["qkv"], 3, axis=-1)
        q, k, v = (a.reshape(b, t, heads, hd).transpose(0, 2, 1, 3) for a in (q, k, v))
        s = jnp.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd), -1e9)
        a = jax.nn.softmax(s, axis=-1) @ v
        x = x + a.transpose(0, 2, 1, 3).reshape(b, t, width) @ blk["proj"]
        x = x + jax.nn.gelu(norm(blk["ln2"], x) @ blk["up"]) @ blk["down"]
    return norm(params["ln_f"], x) @ params["unembed"]


def cross_entropy(logits: Any, targets: Any) -> Any:
    """Cross entropy summed over a sequence's positions (those whose target is not IGNORE) and
    averaged over the sequences of the batch."""
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits, axis=-1)
    valid = targets != IGNORE
    picked = jnp.take_along_axis(logp, jnp.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / targets.shape[0]


# ---- the loss gradient from a CUDA kernel ------------------------------------------------------


class KernelLossGrad:
    """d loss / d logits from a loss-ce kernel, launched as `gradcheck run loss-ce` launches it."""

    def __init__(self, kernel: str, function: str | None, backend: str) -> None:
        op = get_op("loss-ce")
        shipped = op.kernel(kernel)
        if shipped is not None:
            path, function = shipped.path(), shipped.function
        elif kernel.endswith(".cu") and Path(kernel).is_file() and function:
            path = Path(kernel)
        else:
            names = ", ".join(k.name for k in op.kernels)
            raise SystemExit(
                f"--kernel {kernel!r}: not a shipped loss-ce kernel ({names}), nor a .cu file "
                "given with --function NAME"
            )
        self.label = kernel
        self.block = op.default_block
        text = path.read_text()
        module = gradcheck.SourceModule(text, backend=backend, no_extern_c='extern "C"' in text)
        self.backend = module.backend
        self.fn = module.get_function(function)

    def __call__(self, logits: np.ndarray, targets: np.ndarray, sequences: int) -> np.ndarray:
        """The gradient of cross_entropy below: the kernel's scale argument is 1 / sequences."""
        rows, vocab = logits.shape
        mask = (targets != IGNORE).astype(np.float32)
        grad = np.empty_like(logits)
        self.fn(
            gradcheck.In(np.ascontiguousarray(logits, np.float32)),
            gradcheck.In(np.where(targets == IGNORE, 0, targets).astype(np.int32)),
            gradcheck.In(mask),
            gradcheck.Out(grad),
            np.int32(rows),
            np.int32(vocab),
            np.float32(1.0 / sequences),
            block=(self.block, 1, 1),
            grid=(rows, 1),
        )
        return grad


class Model:
    """The forward pass in JAX, the loss gradient from the kernel, the rest by JAX's VJP."""

    def __init__(self, heads: int, loss_grad: KernelLossGrad) -> None:
        import jax

        self.heads, self.loss_grad = heads, loss_grad
        self._logits = jax.jit(lambda p, x: forward(p, x, heads))
        self._backward = jax.jit(
            lambda p, x, d: jax.vjp(lambda q: forward(q, x, heads), p)[1](d)[0]
        )
        self._loss = jax.jit(cross_entropy)  # from the logits already computed: no second forward

    def loss_and_grad(self, params: Any, batch: tuple[np.ndarray, np.ndarray]) -> tuple[float, Any]:
        inputs, targets = batch
        logits = np.asarray(self._logits(params, inputs))
        b, t, v = logits.shape
        dlogits = self.loss_grad(logits.reshape(b * t, v), targets.reshape(b * t), b)
        loss = float(self._loss(logits, targets))
        return loss, self._backward(params, inputs, dlogits.reshape(b, t, v))

    def grad(self, params: Any, batch: tuple[np.ndarray, np.ndarray]) -> Any:
        return self.loss_and_grad(params, batch)[1]

    def reference_loss(self, params: Any, batch: tuple[np.ndarray, np.ndarray]) -> Any:
        """The loss in JAX alone (float64 when called with float64 params): diagnose's reference."""
        return cross_entropy(forward(params, batch[0], self.heads), batch[1])


# ---- SGD with momentum ------------------------------------------------------------------------


class Momentum:
    """SGD with heavy-ball momentum, as torch.optim.SGD does it: buf = beta * buf + g; p -= lr * buf.

    Its stability threshold is exact on a quadratic: lr * lambda_max < 2 + 2 * beta (3.8 here).
    """

    def __init__(self, params: Any, lr: float, beta: float = 0.9) -> None:
        import jax

        self.lr, self.beta = lr, beta
        self.buf = jax.tree_util.tree_map(np.zeros_like, params)

    def update(self, params: Any, grads: Any) -> Any:
        import jax

        self.buf = jax.tree_util.tree_map(lambda b, g: self.beta * b + g, self.buf, grads)
        return jax.tree_util.tree_map(lambda p, b: p - self.lr * b, params, self.buf)


# ---- the script --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--lr", type=float, default=1e-3, help="the learning rate (default 1e-3)")
    p.add_argument(
        "--kernel",
        default="ce-grad",
        help="a loss-ce kernel: a shipped name (gradcheck list) or a .cu path with --function",
    )
    p.add_argument("--function", default=None, help="the kernel function in --kernel's .cu file")
    p.add_argument(
        "--misalign",
        type=int,
        default=1,
        metavar="SHIFT",
        help="targets = inputs shifted by SHIFT (1 is right; 0 a copy task, 2 a double shift)",
    )
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--diagnose", action="store_true", help="probe the data, train, then diagnose_training"
    )
    p.add_argument("--batch", type=int, default=4, help="sequences per batch (default 4)")
    p.add_argument("--seq", type=int, default=64, help="tokens per sequence (default 64)")
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", default=None, metavar="FILE", help="write a JSON-lines training log")
    p.add_argument("--every", type=int, default=50, help="print the loss every N steps")
    return p.parse_args(argv)


def tree_norm(tree: Any) -> float:
    import jax

    return math.sqrt(sum(float(np.sum(np.square(a))) for a in jax.tree_util.tree_leaves(tree)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import jax

    text = generate_text(40_000, seed=1)
    chars = sorted(set(text))
    tokens = np.array([chars.index(c) for c in text], np.int32)
    vocab = len(chars)
    data = Batches(tokens, args.batch, args.seq, args.misalign, seed=args.seed)

    loss_grad = KernelLossGrad(args.kernel, args.function, args.backend)
    model = Model(args.heads, loss_grad)
    params = jax.tree_util.tree_map(
        jax.numpy.asarray, init_params(vocab, args.seq, args.width, args.layers, args.seed)
    )
    n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params))
    print(
        f"tiny LM: {n_params:,} parameters, vocab {vocab}, {args.batch} sequences x {args.seq} "
        f"tokens, SGD momentum 0.9, lr {args.lr:g}; d loss / d logits from the loss-ce kernel "
        f"{loss_grad.label} ({loss_grad.backend} backend)"
    )

    # Data first: the probe checks the first batches and stops a misaligned loader before a step.
    batches = iter(probe.watch(data, n=4, vocab=vocab, ignore_index=IGNORE))
    opt = Momentum(params, args.lr)
    init = params
    # diagnose_training looks at the last parameters whose loss had not blown up (a diverged
    # run's final parameters say nothing about the step that broke it).
    last_sane: tuple[int, Any, Any] = (0, params, opt.buf)
    log = open(args.log, "w") if args.log else None  # noqa: SIM115 - closed in finally
    t0 = time.perf_counter()
    step, first_loss = 0, math.inf
    try:
        for step in range(1, args.steps + 1):
            batch = next(batches)
            loss, grads = model.loss_and_grad(params, batch)
            first_loss = loss if step == 1 else first_loss
            if not math.isfinite(loss) or loss > 2 * first_loss:
                print(
                    f"step {step:4d}  loss {loss / args.seq:.4g} per token: diverged; training stops"
                )
                break
            last_sane = (step - 1, params, opt.buf)
            gnorm = tree_norm(grads)
            params = opt.update(params, grads)
            dist = tree_norm(jax.tree_util.tree_map(lambda a, b: a - b, params, init))
            if log:
                rec = {
                    "step": step,
                    "loss": loss / args.seq,  # per token, comparable with ln V
                    "grad_norm": gnorm,
                    "lr": args.lr,
                    "param_dist": dist,
                }
                log.write(json.dumps(rec) + "\n")
            if step % args.every == 0 or step == 1:
                print(
                    f"step {step:4d}  loss {loss / args.seq:6.3f} per token  grad norm {gnorm:7.2f}"
                    f"  distance from init {dist:6.3f}"
                )
        else:
            last_sane = (args.steps, params, opt.buf)
    except gradcheck.DataMisalignment as exc:
        print(exc.report)
        print("verdict: data-misalignment")
        return 1
    except gradcheck.KernelFault as exc:  # the kernel itself faulted (out of bounds, race, ...)
        print(f"step {step:4d}  the loss-ce kernel faulted: {type(exc).__name__}: {exc}")
    finally:
        if log:
            log.close()
    print(f"{step} steps in {time.perf_counter() - t0:.1f} s")
    if not args.diagnose:
        return 0

    # Then the gradient, then the learning rate: on fixed batches, at those parameters.
    at, params, buf = last_sane
    fixed = [data.draw() for _ in range(4)]
    print(f"diagnose_training at step {at}, on {len(fixed)} fixed batches:")
    report = gradcheck.diagnose_training(
        model.reference_loss,
        model.grad,
        params,
        fixed,
        lr=args.lr,
        optimizer=gradcheck.training.SGD(momentum=opt.beta, buf=buf),
    )
    print(report)
    print(f"verdict: {report.verdict}")
    return 0 if report.verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
