#!/usr/bin/env python3
"""Texts holding the token names llama.cpp re-types by their text (llama_vocab::impl::load in the
llama-cpp-python 0.3.36 sdist: end-of-turn/generation and fill-in-the-middle names become control
tokens, gpt-oss's become user-defined), each alone, inside a word and between spaces, plus
near-misses. Their ids, per vocab, come from llama_text_ids.py:

    python3 name_texts.py OUT.jsonl
    python3 llama_text_ids.py ./llama_tokenize_many VOCAB.gguf OUT.jsonl names-VOCAB.jsonl

Never called by tests.
"""
import json
import sys

NAMES = [
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
    "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>",
    "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>",
    "<|middle|>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>",
    "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>",
    # Near-misses and the ordinary specials around them.
    "<s>", "</s", "<|im_start|>", "<start_of_turn>", "<unk>", "<pad>", "<bos>", "<|plamo:eos|>",
]


def main() -> None:
    out = sys.argv[1]
    with open(out, "w", encoding="utf-8") as w:
        for n in NAMES:
            for t in (n, f"a{n}b", f"Hello {n} world", f"{n}{n}\n{n}"):
                w.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
