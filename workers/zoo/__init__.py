"""The embedded model zoo: a tiny Llama base, three experts and lm-eval tasks, built locally.

    from workers.zoo import build_zoo, zoo_tasks
    zoo = build_zoo()                      # cached in $EVOLVE_ZOO_DIR or ~/.cache/evolve-merge/zoo-v1
    zoo.base, zoo.experts                  # HF model directories
    zoo.tasks.include_path, zoo.tasks.names("test"), zoo.tasks.names("validation")

See docs/zoo.md for the design and the measured "merging matters" table.
"""

from workers.zoo.build import (
    EXPERTS,
    HAND_MERGES,
    MARKER,
    MODEL_NAMES,
    SKILL_TASKS,
    TARGET_TASK,
    ZOO_VERSION,
    Zoo,
    ZooTasks,
    build_zoo,
    default_zoo_dir,
    is_built,
    zoo_tasks,
)

__all__ = [
    "EXPERTS",
    "HAND_MERGES",
    "MARKER",
    "MODEL_NAMES",
    "SKILL_TASKS",
    "TARGET_TASK",
    "ZOO_VERSION",
    "Zoo",
    "ZooTasks",
    "build_zoo",
    "default_zoo_dir",
    "is_built",
    "zoo_tasks",
]
