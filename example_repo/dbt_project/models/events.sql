select event_id, user_id, event, occurred_at, product, amount
from {{ ref('raw_events') }}
