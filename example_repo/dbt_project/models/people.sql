select user_id, email, first_name, last_name, plan, created_at
from {{ ref('raw_people') }}
