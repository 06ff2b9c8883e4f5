"""The five steps of a matrix build as plain functions: the one pipeline every front end runs.

`bin/build-matrix`'s commands (on the checkpointing runner, which the Modal coordinator also runs), upstream's
`UnifiedMatrixBuilder.build_matrix_chunked` and the `unified_calibration` CLI all call these, so the same inputs
give the same matrix, targets and metadata whichever way they came in. Each function takes paths and values and
returns a plain result; none parses flags, prints, or knows the runner.

    dataset.prepare_dataset -> state.select_targets + state.write_state -> chunks.run_chunks
    -> chunks.verify_chunks -> assemble.assemble_matrix + assemble.write_outputs (the one writer of outputs)

One module per step, and nothing imported here, so a runner step's code identity (the project modules it
imports) covers its own step only: editing the report does not make the dataset step stale.
"""
