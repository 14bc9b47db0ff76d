# Sidekiq producer for warroom's queue preset tests: Sidekiq::Client.push, and two jobs
# fetched and failed through Sidekiq's own fetcher and retry handler (one retried, one dead).
$VERBOSE = nil
require "json"
require "sidekiq"
require "sidekiq/fetch"
require "sidekiq/job_retry"
url, queue = ARGV
Sidekiq.configure_client { |c| c.redis = { url: url } }
Sidekiq.configure_server { |c| c.redis = { url: url } }
Sidekiq.logger.level = Logger::WARN
jids = []
jids << Sidekiq::Client.push("class" => "MailJob", "args" => [1], "queue" => queue)
jids << Sidekiq::Client.push("class" => "MailJob", "args" => [2], "queue" => queue)
Sidekiq::Client.push("class" => "MailJob", "args" => [3], "queue" => queue, "at" => Time.now.to_f + 3600)
# one failure retried, one out of retries (dead): fetched and failed as Sidekiq's processor does
broken = "#{queue}_broken"
Sidekiq::Client.push("class" => "MailJob", "args" => [4], "queue" => broken, "retry" => true)
Sidekiq::Client.push("class" => "MailJob", "args" => [5], "queue" => broken, "retry" => 0)
fetch = Sidekiq::BasicFetch.new(queues: [broken])
2.times do
  work = fetch.retrieve_work
  begin
    Sidekiq::JobRetry.new.global(work.job, work.queue_name) { raise "boom" }
  rescue Sidekiq::JobRetry::Handled
  end
end
jobs = Sidekiq.redis { |c| c.lrange("queue:#{queue}", 0, -1) }.map { |j| JSON.parse(j) }
puts JSON.dump({"jids" => jids, "jobs" => jobs, "version" => Sidekiq::VERSION})
