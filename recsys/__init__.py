"""Recommendations (issue 6): models, hybrid, training, artifacts, serving and evaluation on any data.

Entry points: `recsys.service` (recommend_for_customer, similar_to_product, complete_cart: used by the
REST routes in api/recommendations.py and by the bot), `recsys.store.train_store` (`shopdesk train
recsys`), `recsys.eval.evaluate` (`shopdesk eval recsys`). Design and numbers: docs/recsys.md.
"""
