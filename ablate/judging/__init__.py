"""Judging generations: the judges (``judges``, ``reward_model``), generation sets and baselines
(``generations``), win rates (``winrate``) and a set scored by every judge of a sweep (``scoring``)."""
