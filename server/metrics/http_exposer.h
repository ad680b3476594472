#ifndef LORACLE_SERVER_METRICS_HTTP_EXPOSER_H_
#define LORACLE_SERVER_METRICS_HTTP_EXPOSER_H_

// A minimal HTTP/1.x server for Prometheus scrapes: GET /metrics answers with `render()`, any
// other path 404, other methods 405. One thread; connections are served one at a time with a
// 2 s I/O timeout (a scrape is one small request). Owns its thread: `render` must be thread-safe
// with respect to the rest of the program; construction and destruction from one thread.
//
// Why not prometheus::Exposer: the civetweb it wraps (Debian 1.15) fails to start its worker
// threads in any process that has libtorch_cpu loaded ("Cannot create first worker thread"), so
// loracle keeps prometheus-cpp's registry and text format and serves them itself.

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace loracle::metrics {

class HttpExposer {
 public:
  // `bind_address`: "PORT" (all IPv4 interfaces) or "HOST:PORT"; port 0 picks a free one.
  // `render` is called on the exposer thread for each scrape. UNAVAILABLE if it cannot bind.
  static absl::StatusOr<std::unique_ptr<HttpExposer>> Create(const std::string& bind_address,
                                                             std::function<std::string()> render);
  ~HttpExposer();  // stops the thread and closes the socket
  int port() const { return port_; }

 private:
  HttpExposer() = default;
  void Serve();
  void Handle(int fd);

  std::function<std::string()> render_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace loracle::metrics

#endif  // LORACLE_SERVER_METRICS_HTTP_EXPOSER_H_
