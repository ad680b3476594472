#include "server/http/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <exception>
#include <regex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace loracle::http {
namespace {

struct CompiledRoute {
  std::string method;
  std::regex pattern;
  Handler handler;
};

void SplitTimeout(absl::Duration d, time_t* sec, time_t* usec) {
  const int64_t us = absl::ToInt64Microseconds(d);
  *sec = static_cast<time_t>(us / 1000000);
  *usec = static_cast<time_t>(us % 1000000);
}

}  // namespace

std::string Request::Header(absl::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (absl::EqualsIgnoreCase(k, name)) return v;
  }
  return "";
}

struct HttpServer::Impl {
  httplib::Server server;
  std::vector<CompiledRoute> routes;
  std::thread listener;
  int port = 0;

  // Routes by path first, then method: a path some route matches, with no route for this
  // method, is 405 (with Allow), not 404.
  void Dispatch(const httplib::Request& in, httplib::Response& out) {
    std::vector<std::string> allowed;
    for (const CompiledRoute& r : routes) {
      std::smatch m;
      if (!std::regex_match(in.path, m, r.pattern)) continue;
      if (r.method != in.method) {
        allowed.push_back(r.method);
        continue;
      }
      Request req;
      req.method = in.method;
      req.path = in.path;
      for (size_t i = 1; i < m.size(); ++i) req.matches.push_back(m[i].str());
      req.headers.assign(in.headers.begin(), in.headers.end());
      req.body = in.body;
      req.remote_address = in.remote_addr;
      Response resp = r.handler(req);
      out.status = resp.status;
      for (const auto& [k, v] : resp.headers) out.set_header(k, v);
      out.set_content(std::move(resp.body), resp.content_type.c_str());
      return;
    }
    if (allowed.empty()) {
      out.status = 404;
      out.set_content(absl::StrCat("no such path: ", in.path, "\n"), "text/plain");
    } else {
      std::string allow;
      for (const std::string& a : allowed) absl::StrAppend(&allow, allow.empty() ? "" : ", ", a);
      out.status = 405;
      out.set_header("Allow", allow);
      out.set_content(absl::StrCat(in.method, " is not allowed on ", in.path, "\n"), "text/plain");
    }
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const Options& options,
                                                               std::vector<Route> routes) {
  if (options.threads < 1 || options.read_timeout <= absl::ZeroDuration() ||
      options.write_timeout <= absl::ZeroDuration() ||
      options.keep_alive_timeout <= absl::ZeroDuration() || options.max_body_bytes == 0 ||
      options.max_requests_per_connection < 1) {
    return absl::InvalidArgumentError(
        "HTTP server: threads and max_requests_per_connection must be >= 1, timeouts and "
        "max_body_bytes > 0");
  }
  std::string host = "0.0.0.0", port_text = options.bind_address;
  if (const size_t colon = options.bind_address.rfind(':'); colon != std::string::npos) {
    host = options.bind_address.substr(0, colon);
    port_text = options.bind_address.substr(colon + 1);
  }
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535 || host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad HTTP address \"", options.bind_address, "\": want PORT or HOST:PORT"));
  }
  auto impl = std::make_unique<Impl>();
  for (Route& r : routes) {
    try {
      impl->routes.push_back({r.method, std::regex(r.pattern), std::move(r.handler)});
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad route pattern ", r.pattern, ": ", e.what()));
    }
  }
  httplib::Server& s = impl->server;
  const int threads = options.threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  time_t sec = 0, usec = 0;
  SplitTimeout(options.read_timeout, &sec, &usec);
  s.set_read_timeout(sec, usec);
  SplitTimeout(options.write_timeout, &sec, &usec);
  s.set_write_timeout(sec, usec);
  s.set_keep_alive_timeout(
      std::max<time_t>(1, static_cast<time_t>(absl::ToInt64Seconds(options.keep_alive_timeout))));
  s.set_keep_alive_max_count(static_cast<size_t>(options.max_requests_per_connection));
  s.set_payload_max_length(options.max_body_bytes);
  s.set_tcp_nodelay(true);
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which would let a second server
  // bind the same port and silently take half its connections.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  Impl* raw = impl.get();
  auto dispatch = [raw](const httplib::Request& in, httplib::Response& out) {
    raw->Dispatch(in, out);
  };
  const std::string any = ".*";
  s.Get(any, dispatch);
  s.Post(any, dispatch);
  s.Put(any, dispatch);
  s.Delete(any, dispatch);
  s.Patch(any, dispatch);
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& out, std::exception_ptr e) {
        std::string what = "unknown exception";
        try {
          if (e) std::rethrow_exception(e);
        } catch (const std::exception& x) {
          what = x.what();
        } catch (...) {
        }
        out.status = 500;
        out.set_content(absl::StrCat("internal error: ", what, "\n"), "text/plain");
      });
  if (port == 0) {
    impl->port = s.bind_to_any_port(host);
    if (impl->port <= 0) {
      return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", host, ":0"));
    }
  } else {
    if (!s.bind_to_port(host, port)) {
      return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", host, ":", port,
                                                 " (in use, or not an address here)"));
    }
    impl->port = port;
  }
  impl->listener = std::thread([raw] { raw->server.listen_after_bind(); });
  // stop() is a no-op until the listener is running (cpp-httplib 0.11): a destructor right
  // after Create would otherwise leave it blocked in accept().
  while (!s.is_running()) absl::SleepFor(absl::Milliseconds(1));
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  impl_->server.stop();
  if (impl_->listener.joinable()) impl_->listener.join();
}

int HttpServer::port() const { return impl_->port; }

}  // namespace loracle::http
