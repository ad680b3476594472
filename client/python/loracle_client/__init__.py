"""loracle's Python client: predictions with uncertainty, feedback, fine-tuning, adapters.

    from loracle_client import Client
    with Client("localhost:50051") as c:
        for p in c.predict("spam", ["Free money!!!", "See you at 3"]):
            print(p.label, p.probs, p.mutual_information)
"""
from loracle_client._client import (Adapter, Client, FeedbackResult, Job, JobHandle, LoracleError,
                                    MemberOutput, Prediction)

__all__ = ["Adapter", "Client", "FeedbackResult", "Job", "JobHandle", "LoracleError",
           "MemberOutput", "Prediction"]
