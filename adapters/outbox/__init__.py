"""The durable outbox: results kept on disk until the job API accepts them."""
