"""MLflow run names and defence tags: one name per stage and head, read like the DVC stage."""

from __future__ import annotations

from pipeline.tracking import defence_of, head_run_name


def test_run_names_tell_defences_apart() -> None:
    plain: dict = {"method": "dpsh"}
    dp = {"dp": {"dp_target_epsilon": 8.0, "dp_epsilon": 7.99}}
    rr = {"release": {"mechanism": "rr", "epsilon_code": 4.0, "k": 20}}
    kanon = {"release": {"mechanism": "kanon", "epsilon_code": None, "k": 20}}
    names = [head_run_name("evaluate", c, "breastmnist", "csq", 12) for c in (plain, dp, rr, kanon)]
    assert names == [
        "evaluate@breastmnist-csq-12",
        "evaluate_dp@breastmnist-csq-12-eps8",
        "evaluate_rr@breastmnist-csq-12-eps4",
        "evaluate_kanon@breastmnist-csq-12",
    ]
    assert defence_of(plain)[2] == {"defence": "none"}
    assert defence_of(dp)[2] == {"defence": "dp", "dp_target_epsilon": "8"}
    assert defence_of(rr)[2] == {"defence": "rr", "epsilon_code": "4"}
    assert defence_of(kanon)[2] == {"defence": "kanon", "release_k": "20"}
    # ε as the user wrote it, never rounded away
    assert head_run_name(
        "attack", {"release": {"mechanism": "rr", "epsilon_code": 0.5}}, "d", "m", 8
    ) == ("attack_rr@d-m-8-eps0.5")


def test_budgets_that_agree_to_six_digits_keep_distinct_run_names() -> None:
    # ":g" keeps six significant digits: both budgets read eps0.123457 and the report, which
    # finds a release's runs by name, could not tell them apart
    from pipeline.tracking import epsilon_text

    names = {
        head_run_name("evaluate", {"dp": {"dp_target_epsilon": e}}, "d", "m", 12)
        for e in (0.1234567, 0.1234568)
    }
    assert names == {"evaluate_dp@d-m-12-eps0.1234567", "evaluate_dp@d-m-12-eps0.1234568"}
    assert [epsilon_text(e) for e in (8.0, 8, 0.5, 1e-3, float("inf"), 1 / 3)] == [
        "8", "8", "0.5", "0.001", "inf", "0.3333333333333333",
    ]  # fmt: skip
    rr = {"release": {"mechanism": "rr", "epsilon_code": 123456.7}}
    assert defence_of(rr)[2]["epsilon_code"] == "123456.7"  # ":g" wrote 123457
