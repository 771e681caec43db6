"""The peer side of the decoding benchmarks: HF transformers' greedy `generate`, as one call."""


def hf_greedy(torch, hf, prompt, n: int):
    """A function running `hf.generate` greedily for exactly `n` new tokens after `prompt`
    (1-D ids), without recording gradients; it returns the (1, len(prompt) + n) ids."""
    ids = torch.tensor([list(map(int, prompt))])
    kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    def run():
        with torch.no_grad():
            return hf.generate(ids, **kwargs)

    return run
