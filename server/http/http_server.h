#ifndef LORACLE_SERVER_HTTP_HTTP_SERVER_H_
#define LORACLE_SERVER_HTTP_HTTP_SERVER_H_

// An HTTP/1.1 server on cpp-httplib (Debian's libcpp-httplib): a listener thread and a pool of
// `threads` worker threads, each serving one connection at a time (keep-alive included). Every
// read and write of a connection is bounded by its timeout, so a client that sends half a
// request and stalls holds one worker for at most `read_timeout` (plus `keep_alive_timeout` with
// keep-alive on), and other connections are served meanwhile by the rest of the pool. Bodies over
// `max_body_bytes` get 413 unread. httplib.h stays out of this header (it is large; only
// http_server.cc includes it).
//
// Threads: handlers run on the worker threads, several at once; they must be thread-safe.
// Construction (Create) and destruction from one thread; the destructor stops the listener and
// waits for the workers.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace loracle::http {

struct Request {
  std::string method;
  std::string path;
  std::vector<std::string> matches;  // the route pattern's capture groups, in order
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string remote_address;

  // The first header named `name` (case-insensitive), or "" when absent.
  std::string Header(absl::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using Handler = std::function<Response(const Request&)>;

struct Route {
  std::string method;   // "GET", "POST"
  std::string pattern;  // an ECMAScript regex matched against the whole path
  Handler handler;
};

class HttpServer {
 public:
  struct Options {
    std::string bind_address;  // "PORT" (all IPv4 interfaces) or "HOST:PORT"; port 0 = any free
    int threads = 4;           // connections served at once; more wait for a free worker
    absl::Duration read_timeout = absl::Seconds(5);
    absl::Duration write_timeout = absl::Seconds(5);
    absl::Duration keep_alive_timeout = absl::Seconds(5);  // an idle kept-alive connection
    // Requests served on one connection before it is closed; 1 = no keep-alive. A connection
    // holds its worker while kept alive, and after a request it could not read (a stalled
    // client gets 400 after read_timeout) it is kept alive too: with keep-alive, a stalled
    // client holds a worker for read_timeout + keep_alive_timeout.
    int max_requests_per_connection = 100;
    size_t max_body_bytes = 1 << 20;
  };

  // Binds and starts serving `routes` (a path matching no route: 404; a path matching only
  // other methods' routes: 405). INVALID_ARGUMENT for bad options or a bad pattern, UNAVAILABLE
  // when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const Options& options,
                                                            std::vector<Route> routes);
  ~HttpServer();

  int port() const;

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loracle::http

#endif  // LORACLE_SERVER_HTTP_HTTP_SERVER_H_
