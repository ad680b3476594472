// libFuzzer target: a serialized PredictRequest or SubmitRequest (the first byte picks), parsed as
// gRPC would and run through the service's validation with its default limits.
#include <cstddef>
#include <cstdint>

#include "loracle/v1/inference.pb.h"
#include "loracle/v1/training.pb.h"
#include "server/rpc/inference_service.h"
#include "server/rpc/training_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int body_size = static_cast<int>(size - 1);
  if (data[0] % 2 == 0) {
    loracle::v1::PredictRequest request;
    if (request.ParseFromArray(data + 1, body_size)) {
      (void)loracle::serving::Predictor::Validate(loracle::rpc::ToCall(request),
                                                  loracle::serving::Predictor::Limits());
    }
  } else {
    loracle::v1::SubmitRequest request;
    if (request.ParseFromArray(data + 1, body_size)) {
      (void)loracle::rpc::ValidateSubmit(request, loracle::rpc::TrainingService::Options());
    }
  }
  return 0;
}
