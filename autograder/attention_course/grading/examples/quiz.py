"""The example class of 05_quiz: the study notebook's own wrong answers, one student each way."""

from attention_course.grading.examples import Replace, Student

ALL_ANSWERS = (
    "q1a_what_mqa_changes", "q1b_why_decoding_is_faster", "kv_params_mha", "kv_params_mqa", "q2c_mha_kv_params",
    "q2d_mqa_kv_params", "q3a_how_gqa_works", "kv_params_gqa", "q3c_gqa_kv_params", "kv_cache_bytes",
    "q4b_gpt2_medium_cache_bytes", "q4c_mistral_cache_bytes", "q4d_cached_step_flops", "q4e_uncached_attention_flops",
    "q4f_uncached_step_flops", "crossover_context", "o_proj_params", "q5b_falcon_dense_params", "q6a_llama2_7b_attention_params", "q6b_gpt2_xl_attention_params",
    "q6c_llama2_70b_sequences_in_40gb", "q6d_gpt2_bytes_per_token",
)
TEST_CELLS = (
    "test_q1a", "test_q1b", "test_q2a", "test_q2b", "test_q2c", "test_q2d", "test_q3a", "test_q3b", "test_q3c", "test_q4a",
    "test_q4b", "test_q4c", "test_q4d", "test_q4e", "test_q4f", "test_q4g", "test_q5a", "test_q5b", "test_q6a", "test_q6b", "test_q6c", "test_q6d",
)

STUDENTS = [
    Student("solution", "the instructor's answers"),
    Student("untouched", "the release, not worked on", blank=True,
            loses={cell: "not answered yet" for cell in TEST_CELLS}),
    Student(
        "seed_projections",
        "the study notebook's Q2: each head's projection d x d (2*d*d*H for MHA, 2*d*d for MQA)",
        (
            Replace("q2_formulas", "return 2 * d_model * d_model  # k_proj and v_proj: D -> H * d = D each",
                    "return 2 * (d_model // n_heads) ** 2 * n_heads"),
            Replace("q2_formulas", "return 2 * d_model * (d_model // n_heads)  # one key head and one value head: D -> d each",
                    "return 2 * (d_model // n_heads) ** 2"),
        ),
        # Q2c and Q2d are computed with the student's own formulas: the mistake carries into them.
        loses={"test_q2a": "study notebook's 2 * d * d * H", "test_q2b": "study notebook's 2 * d * d",
               "test_q2c": "study notebook's 2 * d * d * H", "test_q2d": "study notebook's 2 * d * d"},
    ),
    Student(
        "seed_gqa_formula",
        "the study notebook's Q3: K/V parameters 2 * D * D / G",
        (Replace("q3", "return 2 * d_model * n_kv_heads * (d_model // n_heads)  # D -> G * d, for keys and for values",
                 "return 2 * d_model * d_model // n_kv_heads"),),
        loses={"test_q3b": "study notebook's 2 * D * D / G", "test_q3c": "study notebook's 2 * D * D / G"},
    ),
    Student(
        "seed_cache_formula",
        "the study notebook's cache size: batch * layers * heads * seq_len * 2 * 2, no head_dim",
        (Replace("q4_memory", "return 2 * batch_size * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_element  # 2: keys and values",
                 "return batch_size * n_layers * n_kv_heads * seq_len * 2 * 2"),),
        # Every cache answer computed with the formula inherits it.
        loses={"test_q4a": "study notebook's formula", "test_q4b": "study notebook's formula",
               "test_q4c": "study notebook's formula", "test_q6c": "study notebook's cache size", "test_q6d": "study notebook's formula"},
    ),
    Student(
        "shrinking_output_projection",
        "the study notebook's Q5: an output projection that shrinks with the key/value heads",
        (
            Replace("q5", "return (n_heads * (d_model // n_heads)) * d_model  # the H query heads' outputs, H * d = D, back to D: the same for any G",
                    "return n_kv_heads * (d_model // n_heads) * d_model"),
            Replace("q1", 'q1a_what_mqa_changes = "B"', 'q1a_what_mqa_changes = "D"'),
            Replace("q3", 'q3a_how_gqa_works = "B"', 'q3a_how_gqa_works = "C"'),
        ),
        loses={"test_q5a": "in MHA, MQA and GQA alike", "test_q5b": "not of the one key/value head",
               "test_q1a": "The output projection stays", "test_q3a": "one D x D matrix"},
    ),
    Student(
        "cache_costs_nothing",
        "thinks a cached step costs nothing that grows with T, uncached attention one query per token, and counts GiB",
        (
            Replace("q4_time", 'q4d_cached_step_flops = "B"', 'q4d_cached_step_flops = "A"'),
            Replace("q4_time", 'q4e_uncached_attention_flops = "C"', 'q4e_uncached_attention_flops = "B"'),
            Replace("q6", "q6c_llama2_70b_sequences_in_40gb = 40 * 10**9 // kv_cache_bytes(1, 80, 8, 128, 4096, 2)",
                    "q6c_llama2_70b_sequences_in_40gb = 40 * 2**30 // kv_cache_bytes(1, 80, 8, 128, 4096, 2)"),
        ),
        loses={"test_q4d": "The new query still meets all T cached keys", "test_q4e": "multiplies attention's FLOPs by 4",
               "test_q6c": "not 40 GiB"},
    ),
    Student(
        "attention_always_dominates",
        "the study notebook's reading: an uncached step grows quadratically at any context, and attention counted as a full T x T matrix",
        (
            Replace("q4_time", 'q4f_uncached_step_flops = "B"', 'q4f_uncached_step_flops = "C"'),
            Replace("q4_crossover", "return 12 * d_model  # 24 T D^2 = 2 T^2 D", "return 6 * d_model"),
        ),
        loses={"test_q4f": "overtakes them only beyond T = 12 D = 9,216", "test_q4g": "the masked half too"},
    ),
]
