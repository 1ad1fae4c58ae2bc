"""Every model's assets and gate checks, in one place for the Definitions."""

from assets import churn, clv, credit_risk, fraud, lifecycle, performance, recommendations, segments

SPECS: list[lifecycle.ModelSpec] = [churn.SPEC, segments.SPEC, recommendations.SPEC, credit_risk.SPEC, clv.SPEC,
                                    fraud.SPEC, performance.MANAGER_SPEC, performance.AGENCY_SPEC]

# a model's own inputs beyond the customer features (built with them, in group features)
model_assets, model_checks = [fraud.transaction_features, performance.book_performance], []
for _spec in SPECS:
    _assets, _checks = lifecycle.model_assets(_spec)
    model_assets += _assets
    model_checks += _checks


if __name__ == "__main__":  # docs/scores.md from the ScoredTables above
    from warehouse.contract_doc import render_scores

    print(render_scores([s.table for s in SPECS]), end="")
