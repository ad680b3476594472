"""loracle_client against a real loracle-server (started by tests/check_python_client.sh;
LORACLE_TARGET names it, LORACLE_ADAPTER one of its adapters)."""
import os
import unittest

import grpc

from loracle_client import Client, LoracleError

TARGET = os.environ["LORACLE_TARGET"]
ADAPTER = os.environ.get("LORACLE_ADAPTER", "a0")


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.client = Client(TARGET, timeout=60)

    def tearDown(self):
        self.client.close()

    def test_predict_returns_distributions_and_uncertainty(self):
        preds = self.client.predict(ADAPTER, ["free money now", "see you at the meeting"],
                                    mc_samples=3, return_members=True, seed=5)
        self.assertEqual(len(preds), 2)
        for p in preds:
            self.assertAlmostEqual(sum(p.probs), 1.0, places=5)
            self.assertEqual(p.label, p.labels[p.label_index])
            self.assertEqual(len(p.members), 3)  # 1 member x 3 samples
            self.assertGreaterEqual(p.mutual_information, 0.0)
            self.assertEqual(p.adapter, ADAPTER)
            self.assertEqual(p.windows, 1)  # the fixture's adapter cuts long texts
            self.assertTrue(p.prediction_id)
        again = self.client.predict(ADAPTER, ["free money now", "see you at the meeting"],
                                    mc_samples=3, return_members=True, seed=5)
        # The same masks, so the same answer; a float32 probability may still differ in its last
        # bit between two calls (seen once in ~10 runs under ctest -j2).
        for p, q in zip(again, preds):
            for a, b in zip(p.probs, q.probs):
                self.assertAlmostEqual(a, b, places=6,
                                       msg="the same request and seed give the same answer")
        # Alone, the text is a batch of another shape (no padding): the same masks, but float
        # rounding may differ in the last bits.
        alone = self.client.predict(ADAPTER, ["free money now"], mc_samples=3, seed=5)
        for a, b in zip(alone[0].probs, preds[0].probs):
            self.assertAlmostEqual(a, b, places=5, msg="a text's samples do not depend on its batch")

    def test_errors_carry_the_status_and_the_servers_message(self):
        with self.assertRaises(LoracleError) as e:
            self.client.predict("no-such-adapter", ["x"])
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("no-such-adapter", e.exception.message)
        with self.assertRaises(LoracleError) as e:
            self.client.predict(ADAPTER, [])
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_feedback_and_adapters(self):
        p = self.client.predict(ADAPTER, ["label this one"])[0]
        r = self.client.feedback({p.prediction_id: p.labels[0]})
        self.assertEqual((r.recorded, r.duplicates), (1, 0))
        r = self.client.feedback([(p.prediction_id, p.labels[0]), ("unknown-id", p.labels[0])])
        self.assertEqual(r.duplicates, 1)
        self.assertIn("unknown-id", r.errors)
        names = {a.name: a for a in self.client.adapters()}
        self.assertEqual(names[ADAPTER].state, "READY")

    def test_finetune_watch_then_predict_with_the_result(self):
        examples = [("win a free prize now click", "spam"), ("meeting moved to friday", "ham")] * 8
        job = self.client.finetune("from-python", examples, max_steps=2, epochs=1, seed=3)
        states = [j.state for j in job.watch(timeout=300)]
        self.assertEqual(states[-1], "SUCCEEDED", job.job.error)
        self.assertGreaterEqual(job.job.published_version, 1)
        p = self.client.predict("from-python", ["a free prize"])[0]
        self.assertEqual(sorted(p.labels), ["ham", "spam"])


if __name__ == "__main__":
    unittest.main()
