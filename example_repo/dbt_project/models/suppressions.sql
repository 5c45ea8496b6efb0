select user_id
from {{ ref('raw_suppressions') }}
