"""The performance suite's pieces run and report consistent figures (no timing asserted)."""

from benchmarks import perf


def test_env_and_rollout_figures_are_consistent(smollm2):
    env = perf.env_steps_per_second(3)
    assert env["episodes"] == 3 and env["steps"] >= 3 and env["steps_per_second"] > 0
    rollout = perf.batched_rollout(smollm2, 2, 2, 4)
    assert rollout["dialogues"] == 2
    # 2 dialogues x 2 turns x at most 4 tokens, plus 2 resolutions of at most 4 tokens
    assert 0 < rollout["generated_tokens"] <= 2 * 2 * 4 + 2 * 4
    assert 0.0 <= rollout["env_share"] < 1.0
    assert rollout["generation_seconds"] <= rollout["seconds"]
    # both dialogues open with the same prompt and every turn re-reads the persona: the
    # model processes only part of the prompt tokens, and all of them without reuse
    assert 0 < rollout["prompt_tokens_computed"] < 0.8
    with perf.without_prefix_reuse(smollm2):
        assert perf.batched_rollout(smollm2, 2, 2, 4)["prompt_tokens_computed"] == 1.0


def test_the_generate_baseline_plays_the_same_rollout(smollm2):
    rollout = perf.batched_rollout(perf.GenerateBackend(smollm2), 2, 2, 4)
    assert 0 < rollout["generated_tokens"] <= 2 * 2 * 4 + 2 * 4
    assert rollout["prompt_tokens_computed"] == 1.0  # model.generate re-encodes everything


def test_scaling_rows_without_a_training_figure_render_and_plot(tmp_path):
    rows = [
        {"dialogues": 1, "rollout_tokens_per_second": 5.0, "training_tokens_per_second": None},
        {"dialogues": 2, "rollout_tokens_per_second": 9.0, "training_tokens_per_second": 3.0},
    ]
    perf.plot_scaling(rows, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert perf._f(None) == "-" and perf._f(2.25) == "2.2"


def test_multi_turn_training_figure_times_both_splits_of_the_same_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(perf, "TIMED_STEPS", 1)
    figure = perf.training_throughput(
        "selfplay", 4, 4, False, tmp_path, turns=3, compare_split=True
    )
    # 4 dialogues of 3 turns, negotiator_0 speaks turns 1 and 3: 8 samples of at most 4 tokens,
    # 2 micro-batches
    assert figure["sequences"] == 8 and 0 < figure["trained_tokens"] <= 8 * 4
    assert figure["processed_tokens"] <= figure["padded_tokens"]
    # the samples' prompts differ in length: bucketing runs on fewer token slots
    assert figure["padded_tokens"] < figure["plain_split"]["padded_tokens"]
    assert figure["seconds"] > 0 and figure["plain_split"]["seconds"] > 0


def test_the_training_profile_lists_the_costliest_operators(monkeypatch):
    monkeypatch.setattr(perf, "TIMED_STEPS", 1)
    table = perf.profile_training_step(2, 4, bf16=False, rows=5)
    assert "Self CPU" in table and "aten::" in table


def test_weights_read_per_forward_leave_out_an_untied_embedding_table(smollm2):
    from transformers import LlamaConfig, LlamaForCausalLM

    tied = smollm2.model  # SmolLM2 ties its embedding to the output head: read as the head
    assert perf.weight_bytes_read(tied) == sum(p.numel() * 4 for p in tied.parameters())
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=False,
    )
    untied = LlamaForCausalLM(config)
    everything = sum(p.numel() * 4 for p in untied.parameters())
    assert perf.weight_bytes_read(untied) == everything - 100 * 16 * 4


def test_one_token_forward_reports_its_rows_rate_and_weight_traffic(smollm2):
    figure = perf.one_token_forward(smollm2, 3, repeats=1)
    assert figure["rows"] == 3 and figure["seconds"] > 0
    assert figure["tokens_per_second"] == 3 / figure["seconds"]
    weights = perf.weight_bytes_read(smollm2.model)
    assert figure["weight_bytes_per_second"] == weights / figure["seconds"]
    assert perf.memory_read_bandwidth(megabytes=8, repeats=1) > 0


def test_utilisation_counts_the_lm_head_of_training_at_trained_tokens_only():
    report = {
        "peak_flops": {"float32": 1e12},
        "rollout": {"fp32": {"batched": {"generated_tokens": 100, "generation_seconds": 2.0}}},
        "training": {
            "fp32": {
                "selfplay": {"processed_tokens_per_second": 10.0, "trained_tokens_per_second": 2.0}
            }
        },
    }
    shares = perf.utilisation(report, parameters=10**9, head=2 * 10**8)
    assert shares["generation"] == 2 * 1e9 * 50 / 1e12  # 2 x parameters x 50 tokens/s
    # the body at all 10 processed tokens/s, the head at the 2 trained ones
    assert shares["training"] == 6 * (8e8 * 10 + 2e8 * 2) / 1e12


def test_perf_results_are_replaced_atomically(tmp_path):
    perf.save({"figure": 1}, tmp_path)
    inode = (tmp_path / "perf.json").stat().st_ino
    perf.save({"figure": 2}, tmp_path)
    assert (tmp_path / "perf.json").stat().st_ino != inode  # a new file renamed in
    assert '"figure": 2' in (tmp_path / "perf.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["perf.json"]
