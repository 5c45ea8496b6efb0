select previous_id, user_id
from {{ ref('raw_aliases') }}
